"""The fleet at the desk: device reports, enrollment, status and evidence for promotion."""
