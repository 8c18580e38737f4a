"""``flordb shell``, one module per concern (litecli's layout).

``session`` runs the loop (interactive or batch) and statements in a worker
thread; ``statements`` splits input at ``;``; ``completer`` suggests names from
``catalog``'s picture of the database; ``commands`` is the dot-command registry;
``display`` renders and pages results; ``keys`` and ``style`` dress the prompt.
"""
