-- A recipient's language (a BCP 47 tag such as `pl` or `pt-BR`), given by the calling
-- backend: their emails and the pages their links open are worded by the templates of that
-- language when the deployment has them.
ALTER TABLE email_preferences ADD COLUMN locale TEXT;
