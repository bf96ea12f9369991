"""The service layer of the HTTP API and the console (DESIGN §9, §10): users, instances,
events. Handlers validate transport (headers, JSON) and call these; these enforce visibility,
run the §3 rules (poller.instances) and talk to the store."""
