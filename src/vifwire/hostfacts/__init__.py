"""Host facts read from the host itself, for the front ends.

The planner and the renderers never look at the host (docs/architecture.md);
what they need to know about it comes in as plain data. The modules here
gather such data by reading the host (sysfs), so each front end asks the same
way and the lookups can be tested against a fake root.
"""
