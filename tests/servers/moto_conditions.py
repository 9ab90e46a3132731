"""Makes moto 5.2.5's IAM enforcement evaluate the two S3 condition keys
of AWS's "enforce conditional writes" policies, which moto otherwise
ignores (only StringEquals is implemented, and no S3 request supplies
condition values, so every Condition block counts as met, and a Deny with
a condition denies everything). `offsite policy s3 --role uploader` prints
such a Deny; with this, moto judges it the way AWS documents it
("Enforce conditional writes on Amazon S3 buckets"):

- s3:if-none-match: the If-None-Match header, when the request has one;
- s3:ObjectCreationOperation: "true" for PutObject (and CopyObject) and
  CompleteMultipartUpload, "false" for CreateMultipartUpload and UploadPart.

and the operators Null, Bool, StringEquals, StringNotEquals. Any other
operator keeps moto's behaviour (ignored). An Allow whose condition fails
does not apply (moto would deny). Imported by moto_run.py before the server
starts.
"""
from urllib.parse import parse_qs, urlparse

from moto.iam import access_control as ac
from moto.iam import policy_conditions as pc


def _s3_context(req):
    h = {k.lower(): v for k, v in req._headers.items()}
    q = parse_qs(urlparse(req._path).query, keep_blank_values=True)
    ctx = {}
    if "if-none-match" in h:
        ctx["s3:if-none-match"] = h["if-none-match"]
    if "if-match" in h:
        ctx["s3:if-match"] = h["if-match"]
    m = req._method.upper()
    if m == "PUT" and "partNumber" in q and "uploadId" in q:
        ctx["s3:ObjectCreationOperation"] = "false"  # UploadPart / UploadPartCopy
    elif m == "POST" and "uploads" in q:
        ctx["s3:ObjectCreationOperation"] = "false"  # CreateMultipartUpload
    elif m == "POST" and "uploadId" in q:
        ctx["s3:ObjectCreationOperation"] = "true"  # CompleteMultipartUpload
    elif m == "PUT" and not any(k in q for k in ("tagging", "acl", "retention", "legal-hold")):
        ctx["s3:ObjectCreationOperation"] = "true"  # PutObject, CopyObject
    return ctx


def _lower_keys(d):
    return {k.lower(): v for k, v in d.items()}


def _check_conditions(self, incoming):
    cond = self._statement.get("Condition")
    if not cond:
        return True
    incoming = _lower_keys(incoming or {})
    for op, kv in cond.items():
        for key, expected in kv.items():
            exp = expected if isinstance(expected, list) else [expected]
            exp = [str(e).lower() if op in ("Null", "Bool") else str(e) for e in exp]
            actual = incoming.get(key.lower())
            if op == "Null":
                if ("true" if actual is None else "false") not in exp:
                    return False
            elif op == "Bool":
                if actual is None or str(actual).lower() not in exp:
                    return False
            elif op == "StringEquals":
                if actual is None or actual not in exp:
                    return False
            elif op == "StringNotEquals":
                if actual is not None and actual in exp:
                    return False
            # other operators: ignored, as moto does
    return True


def _statement_permitted(self, action, resource="*", principal=None, incoming=None):
    # moto answers DENIED for an Allow whose condition fails; AWS treats it as not applying.
    matches = (not self._check_element_matches("NotAction", action)) if "NotAction" in self._statement \
        else self._check_element_matches("Action", action)
    if not matches:
        return ac.PermissionResult.NEUTRAL
    if self.is_unknown_principal(self._statement.get("Principal")):
        return ac.PermissionResult.NEUTRAL
    if principal and not self._check_principal(principal):
        return ac.PermissionResult.DENIED
    if not self._check_conditions(incoming):
        return ac.PermissionResult.NEUTRAL
    if not self._statement.get("Resource"):
        return ac.PermissionResult.PERMITTED
    if not self._check_element_matches("Resource", resource):
        return ac.PermissionResult.NEUTRAL
    return ac.PermissionResult.PERMITTED if self._statement["Effect"] == "Allow" else ac.PermissionResult.DENIED


def _check_action_permitted(self, resource):
    ctx = _s3_context(self) if isinstance(self, ac.S3IAMRequest) else None
    permitted = False
    for policy in self._access_key.collect_policies():
        r = ac.IAMPolicy(policy).is_action_permitted(self._action, resource, None, ctx)
        if r == ac.PermissionResult.DENIED:
            self._raise_access_denied()
        elif r == ac.PermissionResult.PERMITTED:
            permitted = True
    if not permitted:
        self._raise_access_denied()


ac.IAMPolicyStatement._check_conditions = _check_conditions
ac.IAMPolicyStatement.is_action_permitted = _statement_permitted
ac.S3IAMRequest.check_action_permitted = _check_action_permitted
