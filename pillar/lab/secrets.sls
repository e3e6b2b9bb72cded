# Lab-only secrets. They protect nothing but the lab on this host; a real
# environment keeps its secrets out of git (see pillar/production/secrets.sls).
postgresql:
  replication_password: lab-replication-8d1f63c2
  airflow_password: lab-airflow-db-5be04a17
redis:
  password: lab-redis-3c9e2f71
airflow:
  # Identical on every Airflow node (32 url-safe base64 bytes).
  fernet_key: 7w5rJ9yqv3m0Zb3Sx1F2nQm4cA8dE6fG0hJ2kL4nP6s=
  webserver_secret_key: lab-webserver-secret-2b8e41d0a9c7
  admin:
    password: lab-admin-71c3e9
  flower:
    password: lab-flower-4f2a86
  users:
    viewer:
      password: lab-viewer-9d03b1
      roles: [Viewer]
    operator:
      password: lab-operator-e57a20
      roles: [Op]
haproxy:
  stats_password: lab-haproxy-stats-7a42c9e1
  # The Airflow UI's TLS certificate and key at the load balancer: a
  # self-signed pair made for the lab (names airflow-lb1, 10.11.12.5 and
  # 127.0.0.1; ten years) with
  #   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  #     -days 3650 -subj /CN=airflow-lb1 \
  #     -addext subjectAltName=DNS:airflow-lb1,IP:10.11.12.5,IP:127.0.0.1 \
  #     -keyout lab.key -out lab.crt
  # The lab tests trust this certificate.
  tls:
    certificate: |
      -----BEGIN CERTIFICATE-----
      MIIBpjCCAUugAwIBAgIUBMhU3Q9aEFf3z+PEEzrIAYpIS5wwCgYIKoZIzj0EAwIw
      FjEUMBIGA1UEAwwLYWlyZmxvdy1sYjEwHhcNMjYxMTI1MTA1NDA3WhcNMzYxMTIy
      MTA1NDA3WjAWMRQwEgYDVQQDDAthaXJmbG93LWxiMTBZMBMGByqGSM49AgEGCCqG
      SM49AwEHA0IABNtO+TqeBd10r2vXoep87BUw+GaozbzPQ1R+Hort6idEmkjPDwtt
      e3jqBCMmS2SujBjyyGk7URxAuo7AMCYvWhCjdzB1MB0GA1UdDgQWBBR1GuU5Z2sd
      tynqt+6+Oqozhh5p6TAfBgNVHSMEGDAWgBR1GuU5Z2sdtynqt+6+Oqozhh5p6TAP
      BgNVHRMBAf8EBTADAQH/MCIGA1UdEQQbMBmCC2FpcmZsb3ctbGIxhwQKCwwFhwR/
      AAABMAoGCCqGSM49BAMCA0kAMEYCIQD3Tu38ka4SHj7U5Fe2jdHuNoPmzhG/M8rI
      8HpqXs+cOQIhAJG7NdY2B82EPxDceK+CCXWyvX5kL3XQ3Ykw/4cA+LIN
      -----END CERTIFICATE-----
    key: |
      -----BEGIN PRIVATE KEY-----
      MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOrR+Yg+CSokpbtmS
      3oMXSjLii/Gm3HhXhmF/+tJtVHuhRANCAATbTvk6ngXddK9r16HqfOwVMPhmqM28
      z0NUfh6K7eonRJpIzw8LbXt46gQjJktkrowY8shpO1EcQLqOwDAmL1oQ
      -----END PRIVATE KEY-----
