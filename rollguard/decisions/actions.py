"""The actions of control events (docs/events.md, "Actions"), named once.

>>> FINAL
('promote', 'rollback', 'hold', 'complete')
"""

PROMOTE, ROLLBACK, HOLD, SET_TRAFFIC, START = "promote", "rollback", "hold", "set_traffic", "start"
COMPLETE, PAUSE, RESUME = "complete", "pause", "resume"
#: the actions that can end an experiment (``promote`` does unless it bakes: then ``complete``
#: or ``rollback`` follows)
FINAL = (PROMOTE, ROLLBACK, HOLD, COMPLETE)
