"""`c2d`: the command line for consumers, publishers and the demo."""
