-- A reconnect link's state remembers which connection it repairs and where the app wants the
-- person back. Deleting the connection deletes its connect sessions (0011's cascade), and the
-- state's `session_id` goes null with them: without these columns such a callback completed as a
-- plain connect (a new connection without an end user); with them it ends in `connection_gone`.
alter table oauth_states add column reconnect_of text;
alter table oauth_states add column return_url text;
