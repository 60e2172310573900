"""For ``bench/flood_profile.py --patch``: full garbage collections only when the app is quiet.

CPython's own full collections are off (the oldest generation's threshold out of reach); one
runs when no middle collection happened since a check 0.25 s before and at least ten have
since the last full one, or in any case after forty. Tried for issue 17 (docs/performance.md,
"The stall against Textual's own Log"): not kept.
"""

import gc

from chat_tui.app import ChatApp

_mount = ChatApp.on_mount
_seen = [0]


def _check() -> None:
    passed = gc.get_count()[2]
    quiet, _seen[0] = passed == _seen[0], passed
    if passed >= 40 or (passed >= 10 and quiet):
        gc.collect()
        _seen[0] = 0


def _on_mount(self: ChatApp) -> None:
    _mount(self)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)
    self.set_interval(0.25, _check)


ChatApp.on_mount = _on_mount  # type: ignore[method-assign]
