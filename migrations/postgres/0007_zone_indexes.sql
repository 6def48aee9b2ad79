-- A zone's digest run reads its recipients through the preferences' zone, and those who
-- moved away from it in the week through the changes' time.
CREATE INDEX email_preferences_timezone ON email_preferences (timezone);
CREATE INDEX preference_changes_at ON preference_changes (at);
