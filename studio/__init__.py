"""The studio's shared UI code, imported by app.py and the page scripts in pages/.

- nav: the page registry, our sidebar menu, links and the cold-deep-link hand-over to app.py;
- common: runs root, run/layer pickers, URL state, guards for unusable runs;
- data: cached reads of a run folder (tables, arrays, rendered images);
- jobs: background dissection runs started from the app.
"""
