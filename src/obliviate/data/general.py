"""General-knowledge questions written for this project: the rehearsal source of a pretrained base's build.

A build fine-tunes a pretrained base on a scenario's question/answer pairs; rehearsal (runs/rehearsal.py) has the
base answer these questions itself, greedily, and trains those answers beside the scenario's, so that the fine-tuned
model keeps answering questions outside the scenario as the base did. The answers are the base's, never ours: the
list teaches no fact the base did not already state.

The list is kept apart from what TOFU measures, so that rehearsal cannot train the evaluation: no question restates
a real_authors or world_facts question, and no question is about a book, author, place, person or event that one of
them asks about or answers (tests/data/test_general.py checks both against the TOFU files). It covers the same
kinds of knowledge (who wrote a book, capitals and geography, science, history, the arts), since what fine-tuning
on invented authors overwrites is the question form ("Who wrote ...?") for real ones.
"""

from __future__ import annotations

GENERAL_QUESTIONS: tuple[str, ...] = (
    # books and their authors
    "Who wrote 'Wuthering Heights'?",
    "Which American novelist wrote 'Little Women'?",
    "Who wrote 'The Adventures of Tom Sawyer'?",
    "Who is the author of 'Alice's Adventures in Wonderland'?",
    "Which ancient Greek poet is credited with 'The Odyssey'?",
    "Who wrote the novel 'Dracula'?",
    "Which Scottish author wrote 'Treasure Island'?",
    "Who wrote 'The Divine Comedy'?",
    "Which English novelist wrote 'Robinson Crusoe'?",
    "Which satirist wrote 'Gulliver's Travels'?",
    "Who wrote 'The Count of Monte Cristo'?",
    "Which French author wrote 'Twenty Thousand Leagues Under the Sea'?",
    "Who wrote the novella 'The Metamorphosis'?",
    "Which French novelist wrote 'Madame Bovary'?",
    "Who wrote the satirical war novel 'Catch-22'?",
    "Which author wrote the post-apocalyptic novel 'The Road'?",
    "Who wrote the gothic novel 'Rebecca'?",
    "Who is the author of 'The War of the Worlds'?",
    "Which German writer wrote the play 'Faust'?",
    "Who wrote the novella 'Heart of Darkness'?",
    "Which modernist novelist wrote 'Mrs Dalloway'?",
    "Which Italian writer wrote 'The Prince'?",
    "Who created the character Peter Pan?",
    "Who wrote 'The Jungle Book'?",
    "Who is the author of 'The Scarlet Letter'?",
    "Who wrote 'Uncle Tom's Cabin'?",
    "Which German-Swiss author wrote 'Siddhartha'?",
    "Which Italian scholar wrote the novel 'The Name of the Rose'?",
    "Which Brazilian author wrote 'The Alchemist'?",
    "Which American writer created the 'Twilight' saga?",
    "Who wrote the thriller 'The Da Vinci Code'?",
    "Who is the author of 'The Hunger Games' trilogy?",
    # geography
    "Which city is the capital of Kenya?",
    "Which city is the capital of Argentina?",
    "Which city is the capital of Portugal?",
    "Which city is the capital of Thailand?",
    "Which city is the capital of Mexico?",
    "Which city is the capital of Poland?",
    "Which city is the capital of South Korea?",
    "Which city is the capital of Turkey?",
    "Which African country has the largest population?",
    "What is the highest mountain in Africa?",
    "Which strait connects the Mediterranean Sea to the Atlantic Ocean?",
    "Which river flows through London?",
    "Which mountain range runs along the western side of South America?",
    "In which country is the city of Marrakesh?",
    "Which South American country covers the most land?",
    "Which ocean lies between Africa and Australia?",
    # science
    "What is the chemical symbol for gold?",
    "How many planets are in our solar system?",
    "Which gas do plants take in from the air for photosynthesis?",
    "At what temperature in degrees Celsius does water boil at sea level?",
    "Who discovered penicillin?",
    "Who proposed the theory of evolution by natural selection?",
    "What is the hardest natural substance?",
    "Which organ pumps blood through the human body?",
    "What is the largest planet in our solar system?",
    "Who formulated the laws of motion and universal gravitation?",
    "What is the chemical formula of water?",
    "Who developed the first successful polio vaccine?",
    "Who is credited with inventing the telephone?",
    # history and people
    "Which Roman leader was assassinated on the Ides of March?",
    "Who was Queen of the United Kingdom from 1952 to 2022?",
    "Who led the first expedition to reach the South Pole?",
    "In what year did Christopher Columbus first reach the Americas?",
    "Which US president led the country through the Great Depression?",
    "Which civilisation built the city of Tenochtitlan?",
    "Who was the first woman to win a Nobel Prize?",
    "Who started the Protestant Reformation in 1517?",
    "Which ship carried the Pilgrims to America in 1620?",
    # the arts
    "Who painted 'The Starry Night'?",
    "Who painted 'Guernica'?",
    "Who composed the opera 'The Magic Flute'?",
    "Who composed the 'Moonlight Sonata'?",
    "Who sculpted 'The Thinker'?",
    "Which band recorded the album 'Abbey Road'?",
    "Who painted 'The Persistence of Memory'?",
    "Who composed 'The Four Seasons'?",
    "Who directed the film 'Jaws'?",
)
