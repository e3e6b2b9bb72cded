include:
  - common.hosts
  - common.packages
  - common.accounts
