"""The local lab: the product's nodes as systemd-nspawn machines on this host."""
