-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d), as
-- POSTGRES_USER, connected to POSTGRES_DB. One database per server so that each one's migrations
-- own their schema: MLflow tracking, MLflow basic-auth users/permissions, Prefect.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
