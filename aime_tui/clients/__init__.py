"""Protocol clients (Last.fm's HTTP API, Roon's MOO/1): wire formats and failures, no service logic."""
