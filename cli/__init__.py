"""The top floor: the `streamrec` command, the demo (entry points only; logic lives in the role packages)."""
