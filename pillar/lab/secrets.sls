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
pgbackrest:
  # pgBackRest's TLS between the repository and the database servers: a
  # lab-only certificate authority and, for each node, a certificate with
  # its name as CN (which the other end authorizes) and its name and
  # address as subjectAltName; ten years. Made, for each node, with
  #   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  #     -days 3650 -subj /CN=airflow-lab-pgbackrest-ca -keyout ca.key -out ca.crt
  #   openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  #     -subj /CN=NODE -keyout NODE.key -out NODE.csr
  #   openssl x509 -req -in NODE.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
  #     -extfile <(printf 'subjectAltName=DNS:NODE,IP:ADDRESS\nextendedKeyUsage=serverAuth,clientAuth') \
  #     -out NODE.crt
  tls:
    ca_certificate: |
      -----BEGIN CERTIFICATE-----
      MIIBnDCCAUOgAwIBAgIUQPbBJjxfaKQCuH9qSD9b8rkvcaYwCgYIKoZIzj0EAwIw
      JDEiMCAGA1UEAwwZYWlyZmxvdy1sYWItcGdiYWNrcmVzdC1jYTAeFw0yNjEyMDIw
      NDI5MThaFw0zNjExMjkwNDI5MThaMCQxIjAgBgNVBAMMGWFpcmZsb3ctbGFiLXBn
      YmFja3Jlc3QtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARSGqDUqrjxCHcn
      T2W0RbvP4n8j95KmJrdIACYGGW74sRVZA6ZyIl36ZTGjU8V5vh7FAZbwUqghON1o
      zkY2FTQKo1MwUTAdBgNVHQ4EFgQUo9ExOf9new3FAh8/CHgfU/KvYikwHwYDVR0j
      BBgwFoAUo9ExOf9new3FAh8/CHgfU/KvYikwDwYDVR0TAQH/BAUwAwEB/zAKBggq
      hkjOPQQDAgNHADBEAiBMY3I65lLnY3fbXw7b2uYRhuGdLuBug0MI/dNVyHUkLwIg
      dDqA+/uPc3Aqy6mGLEek7QBNkV+6fWNC5LovFF48OAM=
      -----END CERTIFICATE-----
    nodes:
      airflow-lb1:
        certificate: |
          -----BEGIN CERTIFICATE-----
          MIIBuzCCAWGgAwIBAgIUSXYelWYTgYl6+8Qk19fz9Fvb1l8wCgYIKoZIzj0EAwIw
          JDEiMCAGA1UEAwwZYWlyZmxvdy1sYWItcGdiYWNrcmVzdC1jYTAeFw0yNjEyMDIw
          NDI5MThaFw0zNjExMjkwNDI5MThaMBYxFDASBgNVBAMMC2FpcmZsb3ctbGIxMFkw
          EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2jgNQAXl83gpPar17VNBnjNpGT2M6ATt
          ebPJzF3HZj4R60W5nYi0zCmAnwMGuMN77nNDyL6VTRB2BZJm8lOsS6N/MH0wHAYD
          VR0RBBUwE4ILYWlyZmxvdy1sYjGHBAoLDAUwHQYDVR0lBBYwFAYIKwYBBQUHAwEG
          CCsGAQUFBwMCMB0GA1UdDgQWBBRQGGb7vPvfelLcDCU/o7RmCqSBMjAfBgNVHSME
          GDAWgBSj0TE5/2d7DcUCHz8IeB9T8q9iKTAKBggqhkjOPQQDAgNIADBFAiEAwGd2
          2uPHR5TnXD8DR/EiDmjdB3lYriQOy2Rt2Y3HYHkCIGaWth+/FZ5d5QMWCWOSn1xx
          dxPwmGtGVbPdLguaeYHb
          -----END CERTIFICATE-----
        key: |
          -----BEGIN PRIVATE KEY-----
          MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyvPEub4JKIGSpFQC
          2qB7jA2nvAtJVSYQKSJSeVx6tJahRANCAATaOA1ABeXzeCk9qvXtU0GeM2kZPYzo
          BO15s8nMXcdmPhHrRbmdiLTMKYCfAwa4w3vuc0PIvpVNEHYFkmbyU6xL
          -----END PRIVATE KEY-----
      airflow-server1:
        certificate: |
          -----BEGIN CERTIFICATE-----
          MIIBxDCCAWugAwIBAgIUSXYelWYTgYl6+8Qk19fz9Fvb1mAwCgYIKoZIzj0EAwIw
          JDEiMCAGA1UEAwwZYWlyZmxvdy1sYWItcGdiYWNrcmVzdC1jYTAeFw0yNjEyMDIw
          NDI5MThaFw0zNjExMjkwNDI5MThaMBoxGDAWBgNVBAMMD2FpcmZsb3ctc2VydmVy
          MTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABIrjCaaqGSlFlnzMEZ5A6ysOIN0d
          l8777tmNR46iWabL+8KVDDlAMrjdX4B0eLamWQt1Inpac7O5/4EgaVjTh5GjgYQw
          gYEwIAYDVR0RBBkwF4IPYWlyZmxvdy1zZXJ2ZXIxhwQKCwwKMB0GA1UdJQQWMBQG
          CCsGAQUFBwMBBggrBgEFBQcDAjAdBgNVHQ4EFgQU6I0mW0OkCoXzIxaPe8nBWe0j
          bE0wHwYDVR0jBBgwFoAUo9ExOf9new3FAh8/CHgfU/KvYikwCgYIKoZIzj0EAwID
          RwAwRAIgU4h4Hjf8qkfZhkIqQbP+RNYGXtpNQvXkCI9T8SyjYTkCIDrSduIJOlT8
          Sk+WTkNGYkp/3JpceVlXJStcGeO901hP
          -----END CERTIFICATE-----
        key: |
          -----BEGIN PRIVATE KEY-----
          MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUae86cpb4EiJoodl
          qFqk2TUTYMXzJRKt0snPnPIrv3ChRANCAASK4wmmqhkpRZZ8zBGeQOsrDiDdHZfO
          ++7ZjUeOolmmy/vClQw5QDK43V+AdHi2plkLdSJ6WnOzuf+BIGlY04eR
          -----END PRIVATE KEY-----
      airflow-server2:
        certificate: |
          -----BEGIN CERTIFICATE-----
          MIIBxTCCAWugAwIBAgIUSXYelWYTgYl6+8Qk19fz9Fvb1mEwCgYIKoZIzj0EAwIw
          JDEiMCAGA1UEAwwZYWlyZmxvdy1sYWItcGdiYWNrcmVzdC1jYTAeFw0yNjEyMDIw
          NDI5MThaFw0zNjExMjkwNDI5MThaMBoxGDAWBgNVBAMMD2FpcmZsb3ctc2VydmVy
          MjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDOBKWAnfvomNK3pFNYe8I6ndovI
          xQgz/shDe3+/n7iHbKo4XgpHRMhkUYK8Rrb+nwOTeHPdBLjjK5lLq/wNlFSjgYQw
          gYEwIAYDVR0RBBkwF4IPYWlyZmxvdy1zZXJ2ZXIyhwQKCwwUMB0GA1UdJQQWMBQG
          CCsGAQUFBwMBBggrBgEFBQcDAjAdBgNVHQ4EFgQUdzTRhG3WpAWsWLJ2jjjhw8g/
          fKYwHwYDVR0jBBgwFoAUo9ExOf9new3FAh8/CHgfU/KvYikwCgYIKoZIzj0EAwID
          SAAwRQIgGl7TewnjwDpZ/phCqepEkjT513vWvxmzYjQXNd9ecD4CIQDJvdv82ewB
          H2R8is4STf/yQ1AMkoAi3P7Zrm/DHqRmNg==
          -----END CERTIFICATE-----
        key: |
          -----BEGIN PRIVATE KEY-----
          MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQguqjuFoAGlB/TOdQo
          8iAa3zIXpSD1iWxj8G+RntVUvl6hRANCAAQzgSlgJ376JjSt6RTWHvCOp3aLyMUI
          M/7IQ3t/v5+4h2yqOF4KR0TIZFGCvEa2/p8Dk3hz3QS44yuZS6v8DZRU
          -----END PRIVATE KEY-----
