"""Routing: which front-line team gets a case, who in it works on it, and incidents.

Teams and rules come from the alerting file (``sync``); ``rules.route`` picks the team,
``assignment`` picks the member (round robin within working hours and capacity), and
``incidents`` groups bursts of similar complaints.
"""
