# Component settings. Each key overrides salt/<component>/defaults.yaml and
# the OS-family values in salt/<component>/osfamilymap.yaml; leave out what
# the defaults get right.
postgresql:
  # PostgreSQL major version (the seed's production target is 14).
  version: 14
  # A warm standby accepts no queries (the seed's choice); true for hot standby.
  hot_standby: false
redis: {}
