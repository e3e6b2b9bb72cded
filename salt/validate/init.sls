{#- The environment's pillar, checked before anything changes. The top file
    gives every node this state first, and a failed check fails rendering:
    Salt then applies no state at all, on any node (every node's pillar
    holds the whole cluster, so every node fails the same way). The message
    names each pillar key, what is wrong with it, and the fix. When all
    checks pass there is nothing to apply. #}
{%- import_yaml 'roles.yaml' as states_by_role %}
{%- import_yaml 'postgresql/defaults.yaml' as postgresql_defaults %}
{%- import_yaml 'postgresql/osfamilymap.yaml' as postgresql_osfamilymap %}
{%- import_yaml 'airflow/defaults.yaml' as airflow_defaults %}
{%- from 'validate/checks.jinja' import require_secret with context %}
{%- from 'validate/backup.jinja' import check_backup with context %}
{%- set errors = [] %}
{%- set cluster = salt['pillar.get']('cluster', {}) %}
{%- set nodes = cluster.get('nodes') or {} %}

{#- Nodes: an address each (IPv4 or IPv6, no two alike) and known roles. #}
{%- if not nodes %}
{%-   do errors.append("cluster:nodes is empty or missing: list every node with its address and roles (see pillar/production/cluster.sls)") %}
{%- endif %}
{%- set owners = {} %}
{%- set nodes_with = {} %}
{%- for name, node in nodes | dictsort %}
{%-   set key = 'cluster:nodes:' ~ name %}
{%-   set node = node or {} %}
{%-   set address = (node.get('address') or '') | string %}
{%-   if not address %}
{%-     do errors.append(key ~ ":address is missing: give the node's IPv4 or IPv6 address on the cluster network") %}
{%-   elif not address | is_ip %}
{%-     do errors.append(key ~ ":address '" ~ address ~ "' is not an IPv4 or IPv6 address: give the node's address on the cluster network (not a host name)") %}
{%-   elif address in owners %}
{%-     do errors.append(key ~ ":address " ~ address ~ " is also the address of " ~ owners[address] ~ ": give every node its own address") %}
{%-   else %}
{%-     do owners.update({address: name}) %}
{%-   endif %}
{%-   set roles = node.get('roles') or [] %}
{%-   if not roles %}
{%-     do errors.append(key ~ ":roles is empty: give the node at least one of " ~ states_by_role | sort | join(', ')) %}
{%-   endif %}
{%-   for role in roles %}
{%-     if role not in states_by_role %}
{%-       do errors.append(key ~ ":roles has the unknown role '" ~ role ~ "': known roles are " ~ states_by_role | sort | join(', ')) %}
{%-     endif %}
{%-     do nodes_with.setdefault(role, []).append(name) %}
{%-   endfor %}
{%- endfor %}

{#- The initial primary: one node, running both PostgreSQL and Redis. #}
{%- set primary = cluster.get('primary') %}
{%- if nodes_with.get('postgresql') or nodes_with.get('redis') %}
{%-   if not primary or primary is not string %}
{%-     do errors.append("cluster:primary must name exactly one node, the initial PostgreSQL primary and Redis master (for example `primary: airflow-server1`); it is " ~ (primary | json)) %}
{%-   elif primary not in nodes %}
{%-     do errors.append("cluster:primary names " ~ primary ~ ", which is not in cluster:nodes: name one of " ~ nodes | sort | join(', ')) %}
{%-   else %}
{%-     for role in ('postgresql', 'redis') if nodes_with.get(role) and role not in nodes[primary].roles %}
{%-       do errors.append("cluster:primary " ~ primary ~ " has no " ~ role ~ " role, so " ~ nodes_with[role] | join(', ') ~ " would have no " ~ role ~ " primary to follow: add the role to " ~ primary ~ " or name a node that has it") %}
{%-     endfor %}
{%-   endif %}
{%- endif %}

{#- One monitoring node: Prometheus and Alertmanager are not clustered. #}
{%- if nodes_with.get('monitoring', []) | length > 1 %}
{%-   do errors.append("cluster:nodes gives the monitoring role to " ~ nodes_with.monitoring | join(', ') ~ ": give it to one node only") %}
{%- endif %}

{#- The topology record, which failovers write on the master: a node that
    can be the primary. #}
{%- set recorded = salt['pillar.get']('topology:primary') %}
{%- if recorded and (recorded not in nodes or not ('postgresql' in nodes[recorded].roles and 'redis' in nodes[recorded].roles)) %}
{%-   do errors.append("topology:primary names " ~ recorded ~ ", which is not a node with the postgresql and redis roles: the topology record (salt-run airflow_ha.topology shows where it is) is out of date; record the node that is the primary now with salt-run airflow_ha.record_primary NODE reason=...") %}
{%- endif %}

{#- The record is protected: every node keeps a copy of the last record
    it was given (salt/common/topology_record.sls), and a master record that is
    missing or older than that copy (lost, or restored from an old backup)
    must not reconfigure anything. #}
{%- import_yaml 'common/defaults.yaml' as common_defaults %}
{%- set copy_path = common_defaults.common.topology_record_copy %}
{%- if salt['file.file_exists'](copy_path) %}
{%-   set copy = salt['file.read'](copy_path) | load_json %}
{%-   set master_generation = salt['pillar.get']('topology:generation', 0) | int %}
{%-   if (copy.generation or 0) | int > master_generation %}
{%-     do errors.append("topology: the master's topology record is " ~ ("missing" if not salt['pillar.get']('topology') else "at generation " ~ master_generation) ~ ", older than the copy on " ~ grains.id ~ " (generation " ~ copy.generation ~ ", primary " ~ copy.primary ~ "): it was lost or restored from an old backup; check which node is the writer now (salt-run airflow_ha.status), then record it: salt-run airflow_ha.record_primary NODE reason=...") %}
{%-   endif %}
{%- endif %}

{#- Secrets, wherever a role needs them. #}
{%- set airflow_nodes = [] %}
{%- for role, names in nodes_with | dictsort if role.startswith('airflow-') %}
{%-   do airflow_nodes.extend(names) %}
{%- endfor %}
{%- if nodes_with.get('postgresql') or airflow_nodes %}
{%-   do require_secret(errors, 'postgresql:airflow_password') %}
{%- endif %}
{%- if nodes_with.get('postgresql') %}
{%-   do require_secret(errors, 'postgresql:replication_password') %}
{%- endif %}
{%- if nodes_with.get('redis') or airflow_nodes %}
{%-   do require_secret(errors, 'redis:password') %}
{%- endif %}
{%- if nodes_with.get('haproxy') %}
{%-   do require_secret(errors, 'haproxy:stats_password') %}
{%-   for key, pem in [('haproxy:tls:certificate', 'CERTIFICATE'), ('haproxy:tls:key', 'PRIVATE KEY')] %}
{%-     if require_secret(errors, key, multiline=true) and not salt['pillar.get'](key) | string | regex_search('(-----BEGIN [A-Z ]*' ~ pem ~ '-----)') %}
{%-       do errors.append(key ~ " is not a PEM " ~ pem | lower ~ " (-----BEGIN ..." ~ pem ~ "-----): give the Airflow UI's TLS " ~ (pem | lower) ~ " in PEM form") %}
{%-     endif %}
{%-   endfor %}
{%- endif %}
{%- if airflow_nodes %}
{%-   do require_secret(errors, 'airflow:webserver_secret_key') %}
{%-   do require_secret(errors, 'airflow:admin:password') %}
{#-   One Fernet key, or while rotating a list: the new key first. #}
{%-   set fernet = salt['pillar.get']('airflow:fernet_key') %}
{%-   set fernet_keys = ['airflow:fernet_key'] %}
{%-   if fernet is sequence and fernet is not string and fernet is not mapping %}
{%-     set fernet_keys = [] %}
{%-     for index in range(fernet | length) %}
{%-       do fernet_keys.append('airflow:fernet_key:' ~ index) %}
{%-     endfor %}
{%-     if not fernet %}
{%-       do errors.append("airflow:fernet_key is an empty list: give one key, or while rotating a list with the new key first and the old one after it") %}
{%-     elif fernet | map('string') | unique | list | length != fernet | length %}
{%-       do errors.append("airflow:fernet_key lists the same key twice: list each key once, the new key first") %}
{%-     endif %}
{%-   endif %}
{%-   for key in fernet_keys %}
{%-     if require_secret(errors, key) and not salt['pillar.get'](key) | string | regex_match('([A-Za-z0-9_-]{43}=)$') %}
{%-       do errors.append(key ~ " is not a Fernet key (32 bytes, url-safe base64, 44 characters): make one with python3 -c \"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"") %}
{%-     endif %}
{%-   endfor %}
{%-   if nodes_with.get('airflow-flower') %}
{%-     if require_secret(errors, 'airflow:flower:password') and ',' in salt['pillar.get']('airflow:flower:password') %}
{%-       do errors.append("airflow:flower:password holds a comma, which Flower reads as the end of one user:password pair and the start of the next: choose a password without commas") %}
{%-     endif %}
{%-   endif %}
{%-   for username, user in salt['pillar.get']('airflow:users', {}) | dictsort %}
{%-     do require_secret(errors, 'airflow:users:' ~ username ~ ':password') %}
{%-   endfor %}

{#-   Versions the tree can install. #}
{%-   set version = salt['pillar.get']('airflow:version', airflow_defaults.airflow.version) | string %}
{%-   set constraints = 'airflow/files/constraints-' ~ version ~ '-py3.11.txt' %}
{%-   if constraints not in salt['cp.list_master'](prefix='airflow/files/') %}
{%-     do errors.append("airflow:version " ~ version ~ " has no constraints file salt/" ~ constraints ~ ": make it with `bin/make-airflow-constraints " ~ version ~ "`, or use a version that has one") %}
{%-   endif %}
{#-   Airflow 3's tasks reach the API servers through the load balancer. #}
{%-   if version.split('.')[0] | int >= 3 and not nodes_with.get('haproxy') and not (salt['pillar.get']('airflow:base_url') and salt['pillar.get']('airflow:execution_api_url')) %}
{%-     do errors.append("airflow:version " ~ version ~ " runs tasks through the execution API, which the workers reach through a load balancer: give a node the haproxy role in cluster:nodes, or set airflow:base_url and airflow:execution_api_url to your load balancer's addresses") %}
{%-   endif %}
{%- endif %}
{%- if nodes_with.get('postgresql') %}
{%-   set version = salt['pillar.get']('postgresql:version', postgresql_defaults.postgresql.version) %}
{%-   set supported = (salt['grains.filter_by'](postgresql_osfamilymap, grain='os_family') or {}).get('supported_versions', []) %}
{%-   if version not in supported %}
{%-     do errors.append("postgresql:version " ~ version ~ " is not supported on " ~ grains.os_family ~ ": use one of " ~ supported | join(', ') ~ " (salt/postgresql/osfamilymap.yaml)") %}
{%-   endif %}
{%- endif %}

{#- Backups: one repository off the database servers, and a schedule. #}
{%- do check_backup(errors, nodes_with) %}

{%- if errors %}
{{ raise("the pillar of environment " ~ cluster.get('name', '?') ~ " has " ~ errors | length ~ " problem(s); nothing was changed on any node:\n- " ~ errors | join("\n- ")) }}
{%- endif %}
