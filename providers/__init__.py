"""The providers' APIs as sluice calls them: the Airtable client and its rate limiter, the Square
reader, and the errors each raises (one place, used by every stage that calls out)."""
