-- An opt-out or a suppression of an address stops mail to every spelling of it that differs
-- only in capitals (`Parent@example.com`, `parent@example.com`): the decision, the claim and
-- the preferences read an address's spellings through its lower case.
CREATE INDEX email_preferences_email_lower ON email_preferences (lower(email));
CREATE INDEX email_suppressions_email_lower ON email_suppressions (lower(email));
