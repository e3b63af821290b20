-- System message templates (issue 12 §4): the texts the assistant and the widget socket send
-- as "system" messages, per tenant and locale, with the five widget languages shipped as
-- defaults. A tenant's row overrides the default of the same kind and locale.
-- depends: 0006.message_search_index

-- The shipped texts: reference data every tenant reads (no tenant, no app writes).
CREATE TABLE parley.system_text_defaults (
  kind        text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
  locale      text NOT NULL CHECK (locale ~ '^[a-z]{2}$'),
  body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
  store       boolean NOT NULL,  -- kept in the transcript (else shown once, unstored)
  to_widget   boolean NOT NULL,  -- shown to the visitor
  to_channels boolean NOT NULL,  -- posted to the agents' channels (Telegram topics)
  pin         boolean NOT NULL,  -- pinned in the channel's topic
  PRIMARY KEY (kind, locale)
);

-- A tenant's own wording and flags for one kind and locale.
CREATE TABLE parley.system_texts (
  tenant_id   uuid NOT NULL REFERENCES parley.tenants(id) ON DELETE CASCADE,
  kind        text NOT NULL,
  locale      text NOT NULL,
  body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
  store       boolean NOT NULL,
  to_widget   boolean NOT NULL,
  to_channels boolean NOT NULL,
  pin         boolean NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, kind, locale),
  FOREIGN KEY (kind, locale) REFERENCES parley.system_text_defaults (kind, locale)
);

INSERT INTO parley.system_text_defaults (kind, locale, body, store, to_widget, to_channels, pin) VALUES
  ('handoff', 'en', 'I''m connecting you with a person from our team. They''ll reply here as soon as they can.', true, true, true, true),
  ('handoff', 'es', 'Te pongo en contacto con una persona de nuestro equipo. Te responderá aquí lo antes posible.', true, true, true, true),
  ('handoff', 'fr', 'Je vous mets en relation avec une personne de notre équipe. Elle vous répondra ici dès que possible.', true, true, true, true),
  ('handoff', 'de', 'Ich verbinde Sie mit einer Person aus unserem Team. Sie antwortet hier, sobald sie kann.', true, true, true, true),
  ('handoff', 'tr', 'Sizi ekibimizden bir kişiye bağlıyorum. En kısa sürede buradan yanıt verecek.', true, true, true, true),
  ('unknown', 'en', 'I''m sorry, I don''t know the answer to that. Would you like to talk to a person from our team?', true, true, false, false),
  ('unknown', 'es', 'Lo siento, no sé la respuesta. ¿Quieres hablar con una persona de nuestro equipo?', true, true, false, false),
  ('unknown', 'fr', 'Désolé, je ne connais pas la réponse. Voulez-vous parler à une personne de notre équipe ?', true, true, false, false),
  ('unknown', 'de', 'Das weiß ich leider nicht. Möchten Sie mit einer Person aus unserem Team sprechen?', true, true, false, false),
  ('unknown', 'tr', 'Üzgünüm, bunun cevabını bilmiyorum. Ekibimizden biriyle konuşmak ister misiniz?', true, true, false, false),
  ('ai_quota', 'en', 'Our assistant has answered all the questions it can for today. You can ask for a person from our team instead.', true, true, false, false),
  ('ai_quota', 'es', 'Nuestro asistente ya no puede responder más preguntas hoy. Puedes pedir hablar con una persona de nuestro equipo.', true, true, false, false),
  ('ai_quota', 'fr', 'Notre assistant a répondu à toutes les questions possibles pour aujourd''hui. Vous pouvez demander une personne de notre équipe.', true, true, false, false),
  ('ai_quota', 'de', 'Unser Assistent kann heute keine weiteren Fragen beantworten. Sie können nach einer Person aus unserem Team fragen.', true, true, false, false),
  ('ai_quota', 'tr', 'Asistanımız bugün daha fazla soru yanıtlayamıyor. Bunun yerine ekibimizden birini isteyebilirsiniz.', true, true, false, false),
  ('assistant_unavailable', 'en', 'Sorry, the assistant is unavailable right now. You can ask for a person from our team.', true, true, false, false),
  ('assistant_unavailable', 'es', 'Lo siento, el asistente no está disponible ahora. Puedes pedir hablar con una persona de nuestro equipo.', true, true, false, false),
  ('assistant_unavailable', 'fr', 'Désolé, l''assistant n''est pas disponible pour le moment. Vous pouvez demander une personne de notre équipe.', true, true, false, false),
  ('assistant_unavailable', 'de', 'Der Assistent ist gerade nicht verfügbar. Sie können nach einer Person aus unserem Team fragen.', true, true, false, false),
  ('assistant_unavailable', 'tr', 'Üzgünüm, asistan şu anda kullanılamıyor. Ekibimizden birini isteyebilirsiniz.', true, true, false, false),
  ('rate_limited', 'en', 'You''re sending messages too quickly. Please wait a moment and try again.', false, true, false, false),
  ('rate_limited', 'es', 'Estás enviando mensajes demasiado rápido. Espera un momento y vuelve a intentarlo.', false, true, false, false),
  ('rate_limited', 'fr', 'Vous envoyez des messages trop vite. Patientez un instant et réessayez.', false, true, false, false),
  ('rate_limited', 'de', 'Sie senden Nachrichten zu schnell. Bitte warten Sie einen Moment und versuchen Sie es erneut.', false, true, false, false),
  ('rate_limited', 'tr', 'Çok hızlı mesaj gönderiyorsunuz. Lütfen biraz bekleyip tekrar deneyin.', false, true, false, false),
  ('conversation_limit', 'en', 'We can''t start a new chat right now. Leave your details and we''ll get back to you.', false, true, false, false),
  ('conversation_limit', 'es', 'Ahora no podemos iniciar un chat nuevo. Déjanos tus datos y te contactaremos.', false, true, false, false),
  ('conversation_limit', 'fr', 'Nous ne pouvons pas ouvrir de nouvelle discussion pour le moment. Laissez vos coordonnées et nous vous recontacterons.', false, true, false, false),
  ('conversation_limit', 'de', 'Wir können gerade keinen neuen Chat beginnen. Hinterlassen Sie Ihre Kontaktdaten, wir melden uns.', false, true, false, false),
  ('conversation_limit', 'tr', 'Şu anda yeni bir sohbet başlatamıyoruz. Bilgilerinizi bırakın, size dönelim.', false, true, false, false),
  ('message_limit', 'en', 'This chat can''t take more messages right now. Please try again later.', true, true, false, false),
  ('message_limit', 'es', 'Este chat no puede recibir más mensajes ahora. Inténtalo de nuevo más tarde.', true, true, false, false),
  ('message_limit', 'fr', 'Cette discussion ne peut plus recevoir de messages pour le moment. Réessayez plus tard.', true, true, false, false),
  ('message_limit', 'de', 'Dieser Chat kann gerade keine weiteren Nachrichten annehmen. Bitte versuchen Sie es später erneut.', true, true, false, false),
  ('message_limit', 'tr', 'Bu sohbet şu anda daha fazla mesaj alamıyor. Lütfen daha sonra tekrar deneyin.', true, true, false, false);

-- System texts are rate-limited per conversation in the same windows as everything else.
ALTER TABLE parley.rate_counters DROP CONSTRAINT rate_counters_scope_check;
ALTER TABLE parley.rate_counters ADD CONSTRAINT rate_counters_scope_check
  CHECK (scope IN ('chatbot', 'ip', 'tenant', 'conversation', 'api_key', 'system_text'));
