-- The split profile of deploy/compose.yaml: a database per service, made on PostgreSQL's first
-- start (the image runs this from /docker-entrypoint-initdb.d). Each service migrates its own
-- at start. The monolith uses the database `app` (POSTGRES_DB).
CREATE DATABASE app_user;
CREATE DATABASE app_inventory;
CREATE DATABASE app_order;
