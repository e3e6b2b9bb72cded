# Secrets of the environment. Keep them out of git: render this file from an
# encrypted source (for example Salt's gpg renderer: `#!yaml|gpg` with
# ciphertext values) or an external pillar. Every value below must be set;
# any printable character may be used. After changing one, run
# `salt-run state.orchestrate orch.rotate` (README, "Rotating secrets").
postgresql:
  # Password of the replication role (streaming replication, pg_rewind).
  replication_password: CHANGE-ME
  # Password of the Airflow database owner.
  airflow_password: CHANGE-ME
redis:
  # requirepass and masterauth of every Redis node.
  password: CHANGE-ME
airflow:
  # Fernet key (encrypts connections and variables): identical on every node.
  # Make one with: python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"
  # To rotate it: [NEW, OLD] and orch.rotate, later NEW alone and orch.rotate
  # again (README, "Rotating secrets").
  fernet_key: CHANGE-ME
  # Signs webserver sessions and worker log URLs: identical on every node.
  webserver_secret_key: CHANGE-ME
  # The superuser created at install.
  admin:
    password: CHANGE-ME
  # Flower's basic auth (user airflow:flower:username, default flower).
  flower:
    password: CHANGE-ME
  # Further users, each with a password and roles (Admin, Viewer, User, Op, Public):
  # users:
  #   alice:
  #     password: CHANGE-ME
  #     roles: [Op]
  #     email: alice@example.com
haproxy:
  # Password of HAProxy's statistics page (user haproxy:stats_user in
  # settings.sls), on the nodes with the haproxy role.
  stats_password: CHANGE-ME
  # The Airflow UI's TLS certificate (PEM, with its intermediate
  # certificates after it) and its private key (PEM, unencrypted), served by
  # HAProxy on haproxy:airflow_tls_port; plain HTTP is redirected there.
  tls:
    certificate: CHANGE-ME
    key: CHANGE-ME
pgbackrest:
  # pgBackRest's TLS between the backup node and the database servers: a
  # certificate authority of your own (PEM), and for the backup node and
  # every database server a certificate it signed, with the node's minion
  # id as CN and its name and address as subjectAltName, usable as server
  # and client (extendedKeyUsage serverAuth, clientAuth), and its key
  # (PEM, unencrypted). pillar/lab/secrets.sls shows the openssl commands.
  tls:
    ca_certificate: CHANGE-ME
    nodes:
      airflow-backup1:
        certificate: CHANGE-ME
        key: CHANGE-ME
      airflow-server1:
        certificate: CHANGE-ME
        key: CHANGE-ME
      airflow-server2:
        certificate: CHANGE-ME
        key: CHANGE-ME
