-- An opt-out or a suppression of an address stops mail to every spelling of it that differs
-- only in capitals (`Parent@example.com`, `parent@example.com`): the decision, the claim and
-- the preferences look the address's spellings up by its lower case. Only the recipients who
-- turned something off are indexed, so a new recipient costs no more to record.
CREATE INDEX email_preferences_opted_out ON email_preferences (lower(email))
    WHERE weekly_digest_enabled = 0 OR session_reports_enabled = 0;
CREATE INDEX email_suppressions_email_lower ON email_suppressions (lower(email));
