"""A run's process keeps Python's garbage collector off what it had loaded before the run.

CPython's full collection (its oldest generation) walks every container object the process
tracks. Before a run's first step a worker already holds some 170,000 of them (the modules, the
code location's definitions, Dagster's instance and the run's plan), all alive until the process
ends. The pull's records trigger a full collection now and then, and walking those objects made
each one cost 0.12 s; in the pull-only benchmark one fell after Airtable's last answer in every
run, while the checks ran (issue 15, goal 5).

`freeze_loaded_objects` moves everything tracked at that moment to the permanent generation
(`gc.freeze`), once per process: later collections skip it. It changes what the cycle collector
looks at, nothing else: an object whose last reference goes is freed as before, frozen or not.
Only a reference cycle that is already garbage at the freeze (import-time leftovers, once per
process) is never collected. The collection that would reclaim those first is skipped on
purpose: it costs the run the same 0.05-0.1 s the freeze saves it.
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
