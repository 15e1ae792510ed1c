"""The tracking server's login check (the `authorization_function` of the auth config that
`scripts/mlflow-server` writes), run inside the MLflow server's process: MLflow's basic-auth
check, except that a users' database that is away for a moment is an error the server answers
503, which MLflow's clients retry, rather than a refused login, 401, which they do not.

MLflow 3.17 takes a database error while it looks a user up for a user that does not exist, in
two places: its own check (after the password matched, for a login not in its cache), and its
bridge to FastAPI's routes (the proxied artifact uploads), which looks the user up after any
check. With PostgreSQL restarting, sweeps' artifact uploads were refused and a trial FAILED, or
a worker stopped (the soak found both, issue 26). So this check asks the database itself, after
MLflow's: an error there is raised (answered 503), and a login refused while the database was
away is checked again. What is left: the database going away between this look-up and the
bridge's, a moment in the same request.
"""

from __future__ import annotations

from flask import Response, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.server import auth as mlflow_auth
from werkzeug.datastructures import Authorization

#: What MLflow's store raises for a user it does not hold.
NO_SUCH_USER = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def authenticate_request() -> Authorization | Response:
    """MLflow's basic-auth answer for this request, once the users' database has answered for
    the login given: an error there is raised (MLflow answers it 503, TEMPORARILY_UNAVAILABLE),
    an unknown user is refused, and a login refused before the database answered is checked
    again."""
    answer = mlflow_auth.authenticate_request_basic_auth()
    given = request.authorization
    if given is None or given.username is None:
        return answer
    try:
        mlflow_auth.store.get_user(given.username)
    except MlflowException as err:
        if err.error_code == NO_SUCH_USER:
            return mlflow_auth.make_basic_auth_response()
        raise
    if isinstance(answer, Authorization):
        return answer
    return mlflow_auth.authenticate_request_basic_auth()
