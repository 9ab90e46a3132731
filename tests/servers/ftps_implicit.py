"""An FTPS server with IMPLICIT TLS (TLS from the first byte, as on port
990), built on pyftpdlib, which only has explicit TLS (AUTH TLS) itself.
TLS is required on the data connections too (PBSZ 0 + PROT P).

Usage: python ftps_implicit.py PORT ROOT USER PASSWORD CERTFILE KEYFILE PASV_RANGE READER
(PASV_RANGE as FIRST-LAST). READER logs in with the same password and may
only list and read (for the permission tests). Started and stopped by ftp.sh.
"""
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import FTPServer


class ImplicitTLSHandler(TLS_FTPHandler):
    tls_control_required = True
    tls_data_required = True

    def handle(self):
        # No plain banner: start the TLS handshake at once...
        self.secure_connection(self.ssl_context)

    def handle_ssl_established(self):
        # ...and greet (220) once it is done, over TLS.
        TLS_FTPHandler.handle(self)


def main():
    port, root, user, password, certfile, keyfile, pasv, reader = sys.argv[1:9]
    first, last = (int(p) for p in pasv.split("-"))
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    authorizer.add_user(reader, password, root, perm="elr")
    ImplicitTLSHandler.authorizer = authorizer
    ImplicitTLSHandler.certfile = certfile
    ImplicitTLSHandler.keyfile = keyfile
    ImplicitTLSHandler.passive_ports = range(first, last + 1)
    server = FTPServer(("127.0.0.1", int(port)), ImplicitTLSHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
