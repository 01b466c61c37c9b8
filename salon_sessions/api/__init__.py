"""The FastAPI onboarding API and page (issue: the onboarding API)."""
