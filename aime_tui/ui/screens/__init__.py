"""The dashboard's screens beyond the main one."""
