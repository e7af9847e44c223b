# Rendered by `loadlab compose render`: do not edit. The lab's database and users, as the
# postgres role creates them (playbooks/roles/postgres/tasks/database.yml). The PostgreSQL image sources
# this once, when its data volume is empty; the passwords come from secrets/compose/postgres.env
# (secrets/postgres_app, secrets/postgres_monitor). After they change: `docker compose down -v`, up again.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set app_user=loadlab --set monitor_user=loadlab_monitor \
  --set db=loadlab \
  --set app_password="$LOADLAB_POSTGRES_APP_PASSWORD" \
  --set monitor_password="$LOADLAB_POSTGRES_MONITOR_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE ROLE :"monitor_user" LOGIN PASSWORD :'monitor_password';
GRANT pg_monitor TO :"monitor_user";
CREATE DATABASE :"db" OWNER :"app_user";
SQL
