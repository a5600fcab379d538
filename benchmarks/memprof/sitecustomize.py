"""Phase-marked memory timeline of every Python process started with this directory on PYTHONPATH and MEMPROF set
to a folder (benchmarks/memory.py --phases does both): a daemon thread writes the process's VmRSS every 20 ms to
MEMPROF/rss-PID.log, and, once torch is imported, global hooks mark the start and end of each causal-LM forward,
each backward and each optimiser step. Not part of obliviate: a measuring instrument for the benchmark."""

import os
import sys
import threading
import time

_DIR = os.environ.get("MEMPROF")


def _start(folder: str) -> None:
    log = open(os.path.join(folder, f"rss-{os.getpid()}.log"), "w", buffering=1)

    def rss() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))

    def mark(tag: str) -> None:
        log.write(f"{time.time():.3f} M {tag} {rss()}\n")

    def hook() -> None:
        import torch
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        backward = torch.autograd.backward

        def marked_backward(*args, **kwargs):
            mark("bwd0")
            try:
                return backward(*args, **kwargs)
            finally:
                mark("bwd1")

        torch.autograd.backward = marked_backward
        register_optimizer_step_pre_hook(lambda *a: mark("opt0"))
        register_optimizer_step_post_hook(lambda *a: mark("opt1"))
        lm = lambda m: type(m).__name__.endswith("ForCausalLM")  # noqa: E731
        register_module_forward_pre_hook(lambda m, a: mark("fwd0") if lm(m) else None)
        register_module_forward_hook(lambda m, a, o: mark("fwd1") if lm(m) else None)

    def sample() -> None:
        hooked = False
        while True:
            log.write(f"{time.time():.3f} R {rss()}\n")
            if not hooked and "torch.optim" in sys.modules and "torch.autograd" in sys.modules:
                hooked = True
                hook()
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()


if _DIR:
    _start(_DIR)
