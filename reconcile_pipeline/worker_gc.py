"""A run's process keeps Python's garbage collector off what it had loaded before the run.

CPython's full collection (its oldest generation) walks every container object the process
tracks. Before a run's first step a worker already holds some 170,000 of them (the modules, the
code location's definitions, Dagster's instance and the run's plan), all alive until the process
ends. A pull's records trigger a full collection now and then, and walking those objects made
each one cost 0.12-0.16 s; in 3 of 6 pull-only runs of 10k records measured, one fell after
Airtable's last answer, where the run waits on it (issue 15, goal 5).

`freeze_loaded_objects` moves everything tracked at that moment to the permanent generation
(`gc.freeze`), once per process: later collections skip it. It changes what the cycle collector
looks at, nothing else: an object whose last reference goes is freed as before, frozen or not.
Only a reference cycle that is already garbage at the freeze (import-time leftovers, once per
process) is never collected. The full collection that would reclaim those first is skipped on
purpose: it would cost every run process 0.05-0.07 s, half of what the freeze saves a 10k run.
"""

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_loaded_objects() -> bool:
    """Freeze the objects tracked now, the first time a process calls; True if this call did."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.freeze()
        _frozen = True
        return True
