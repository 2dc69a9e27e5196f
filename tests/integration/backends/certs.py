"""A throw-away certificate authority for the TLS tests, made with the
openssl command: make_ca() writes NAME.pem and NAME.key, make_cert() a
certificate signed by such a CA (EC P-256, 30 days)."""
import subprocess

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args, cwd=None, input=None, timeout=20):
    return subprocess.run(["openssl"] + list(args), cwd=cwd, input=input, capture_output=True,
                          timeout=timeout)


def make_ca(d, name, cn):
    p = openssl("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days",
                "30", "-subj", f"/CN={cn}", cwd=d)
    assert p.returncode == 0, p.stderr


def make_cert(d, ca, name, subject, san=None, usage="serverAuth"):
    p = openssl("req", "-new", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                subject, cwd=d)
    assert p.returncode == 0, p.stderr
    ext = f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
    if san:
        ext += f"subjectAltName={san}\n"
    (d / f"{name}.ext").write_text(ext)
    p = openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "30", "-extfile",
                f"{name}.ext", cwd=d)
    assert p.returncode == 0, p.stderr
