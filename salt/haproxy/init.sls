{#- HAProxy, the load balancer in front of the Airflow webservers and the
    Flowers (the nodes whose roles include airflow-webserver and
    airflow-flower), with its statistics page. #}
include:
  - haproxy.install
  - haproxy.tls
  - haproxy.config
  - haproxy.service
