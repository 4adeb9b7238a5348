"""Enrolment of village nodes: certificate authority, one-time tokens, broker access rules,
technician CLI and the commissioning check."""
