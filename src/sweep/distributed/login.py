"""The tracking server's login check (the `authorization_function` of the auth config that
`scripts/mlflow-server` writes), run inside the MLflow server's process: MLflow's basic-auth
check, except that a users' database that is away for a moment is an error the server answers
503, which MLflow's clients retry, rather than a refused login, 401, which they do not.

MLflow 3.17's check takes a database error while it looks a user up (after the password
matched) for a user deleted meanwhile, and refuses the login: with PostgreSQL restarting, a
sweep's artifact upload was refused and its trial FAILED (the soak found it, issue 26).
"""

from __future__ import annotations

from flask import Response, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.server import auth as mlflow_auth
from werkzeug.datastructures import Authorization

#: What MLflow's store raises for a user it does not hold (the refusal then stands).
NO_SUCH_USER = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def authenticate_request() -> Authorization | Response:
    """MLflow's basic-auth answer for this request; when it refuses a login that was given, the
    users' database is asked directly: an error there is raised (MLflow's request handler
    answers it 503, TEMPORARILY_UNAVAILABLE), and a database that answers checks it again."""
    answer = mlflow_auth.authenticate_request_basic_auth()
    given = request.authorization
    if isinstance(answer, Authorization) or given is None or given.username is None:
        return answer
    try:
        mlflow_auth.store.get_user(given.username)
    except MlflowException as err:
        if err.error_code == NO_SUCH_USER:
            return answer
        raise
    return mlflow_auth.authenticate_request_basic_auth()
