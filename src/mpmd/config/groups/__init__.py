"""The directive declarations, one module per group of directives.

Each module declares GROUP (its name), TITLE (its section heading in docs/directives.md) and
DIRECTIVES, a tuple of `Directive(...)` records with every field named. config/directives.py
lists the modules in GROUPS and indexes them; a new group is a new module plus its name there.
"""
