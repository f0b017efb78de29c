"""Support analytics: feedback, CSAT/NPS, conversation lifecycle (and, later, reports)."""
