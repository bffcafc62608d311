-- The database role of extra NPU hosts (docker/compose.npu-host.yaml): it may read and write the
-- rows of Airflow's tables (Celery result backend, the worker's bookkeeping) but is no superuser,
-- owns nothing and cannot change the schema. Run on the main host, as the superuser `airflow`:
--
--   docker compose exec -T postgres psql -U airflow -d airflow \
--     -v npu_password="'<AIRFLOW_DB_PASSWORD of docker/npu-host.env>'" < docker/npu-worker-role.sql
--
-- Safe to run again, and run it again after an upgrade that added tables.
SELECT 'CREATE ROLE cgan_npu LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cgan_npu') \gexec
ALTER ROLE cgan_npu WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :npu_password;
GRANT CONNECT ON DATABASE airflow TO cgan_npu;
GRANT USAGE ON SCHEMA public TO cgan_npu;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO cgan_npu;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO cgan_npu;
ALTER DEFAULT PRIVILEGES FOR ROLE airflow IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO cgan_npu;
ALTER DEFAULT PRIVILEGES FOR ROLE airflow IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO cgan_npu;
-- Not the tables a worker has no business with: the auth manager's users, roles and permissions
-- (rights there would let a task make itself an admin) and the connections and variables (a
-- worker gets those from the Execution API, decrypted for its task only). Revoked again at each
-- run, so a table an upgrade re-created is covered too.
DO $revoke$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['ab_user', 'ab_user_role', 'ab_role', 'ab_permission', 'ab_permission_view',
                           'ab_permission_view_role', 'ab_view_menu', 'ab_register_user', 'ab_group',
                           'ab_group_role', 'ab_user_group', 'connection', 'variable', 'session'] LOOP
    IF to_regclass(format('public.%I', t)) IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON TABLE public.%I FROM cgan_npu', t);
    END IF;
  END LOOP;
END
$revoke$;
