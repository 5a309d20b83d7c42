"""Device identity: each cabinet's own MQTT credentials, the services' accounts, and the topic rules
(ACLs) that keep a cabinet to its own topics, for the embedded broker and for Mosquitto; and the channels
riders sign in through (`sms.py`, `wechat_login.py`)."""
