"""The control socket: protocol, server, blocking client, and the remote engine an attached dashboard uses."""
