"""Talking to the outside: failure alerts (webhook, e-mail) and Airflow's REST API for `cgan register-checkpoint`."""
