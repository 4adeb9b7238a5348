"""The node PKI: a certificate authority, node keys, CSRs and the CRL. A library that knows
neither side: central signs and revokes with it, the technician's tools enrol with it, and the
edge makes its renewal key and CSR with it (in a short-lived subprocess)."""
