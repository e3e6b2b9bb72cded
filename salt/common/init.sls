include:
  - common.hosts
  - common.packages
  - common.accounts
  - common.topology_record
