# The local lab (bin/lab): four systemd-nspawn machines on the host bridge.
include:
  - lab.cluster
  - lab.secrets
  - lab.settings
  - lab.fencing
