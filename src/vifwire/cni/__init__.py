"""``vifwire-cni``: the CNI plugin front end (docs/cni.md)."""
