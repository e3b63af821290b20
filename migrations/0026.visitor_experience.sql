-- Visitor experience: which members are online (for "no one is available right now"), and the
-- chatbot templates offered in onboarding and chatbot settings. Rules in sql/47_presence.sql
-- and sql/48_chatbot_templates.sql.
-- depends: 0019.telegram_inbound

-- One row per member and server instance while that member has an agent socket or an event
-- stream open there; refreshed every PRESENCE_BEAT seconds, removed when the last one closes.
-- A row not refreshed for 90 s (an instance that died) no longer counts.
CREATE TABLE parley.member_presence (
  tenant_id    uuid NOT NULL,
  user_id      uuid NOT NULL,
  instance_id  text NOT NULL CHECK (length(instance_id) BETWEEN 1 AND 64),
  seen_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, user_id, instance_id),
  FOREIGN KEY (tenant_id, user_id) REFERENCES parley.members (tenant_id, user_id) ON DELETE CASCADE
);

-- Templates are product data, the same for every tenant (a reference table, like plans).
CREATE TABLE parley.chatbot_templates (
  key          text PRIMARY KEY CHECK (key ~ '^[a-z][a-z_]{1,31}$'),
  position     int NOT NULL,
  title        text NOT NULL,
  description  text NOT NULL,
  config       jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object')
);

INSERT INTO parley.chatbot_templates (key, position, title, description, config) VALUES
('support', 1, 'Customer support', 'Answers questions from your help pages and hands over to the team when it cannot.',
 '{"persona": "You are the customer support assistant. Answer only from the knowledge provided, briefly and kindly. If the answer is not in the knowledge, say so and offer to connect the visitor with a person. Never invent order details, prices or policies.",
   "greeting": "Hi! How can we help you today?",
   "starters": ["Where is my order?", "How do I return an item?", "Talk to a person"],
   "texts": {"es": {"greeting": "¡Hola! ¿En qué podemos ayudarte hoy?", "starters": ["¿Dónde está mi pedido?", "¿Cómo devuelvo un artículo?", "Hablar con una persona"]},
             "fr": {"greeting": "Bonjour ! Comment pouvons-nous vous aider ?", "starters": ["Où est ma commande ?", "Comment retourner un article ?", "Parler à une personne"]},
             "de": {"greeting": "Hallo! Wie können wir Ihnen heute helfen?", "starters": ["Wo ist meine Bestellung?", "Wie sende ich etwas zurück?", "Mit einer Person sprechen"]},
             "tr": {"greeting": "Merhaba! Bugün size nasıl yardımcı olabiliriz?", "starters": ["Siparişim nerede?", "Bir ürünü nasıl iade ederim?", "Bir kişiyle konuş"]}},
   "handoff": {"miss_threshold": 2},
   "lead_capture": {"mode": "before_handoff"}}'),
('sales', 2, 'Sales assistant', 'Explains plans and prices, and collects contact details from interested visitors.',
 '{"persona": "You are a friendly sales assistant. Help visitors understand the products, plans and prices described in the knowledge, and suggest the one that fits what they tell you. Do not promise discounts or features that are not in the knowledge. When a visitor is interested, offer to have someone from the team get in touch.",
   "greeting": "Hi! Looking for the right plan? Ask me anything.",
   "starters": ["Which plan is right for me?", "How much does it cost?", "Can I book a demo?"],
   "texts": {"es": {"greeting": "¡Hola! ¿Buscas el plan adecuado? Pregúntame lo que quieras.", "starters": ["¿Qué plan me conviene?", "¿Cuánto cuesta?", "¿Puedo pedir una demo?"]},
             "fr": {"greeting": "Bonjour ! Vous cherchez la bonne offre ? Posez-moi vos questions.", "starters": ["Quelle offre me convient ?", "Combien ça coûte ?", "Puis-je avoir une démo ?"]},
             "de": {"greeting": "Hallo! Sie suchen den passenden Tarif? Fragen Sie mich.", "starters": ["Welcher Tarif passt zu mir?", "Was kostet es?", "Kann ich eine Demo buchen?"]},
             "tr": {"greeting": "Merhaba! Doğru planı mı arıyorsunuz? Bana sorun.", "starters": ["Hangi plan bana uygun?", "Ne kadar tutar?", "Demo ayarlayabilir miyim?"]}},
   "handoff": {"miss_threshold": 2},
   "lead_capture": {"mode": "after_messages", "after": 2}}'),
('faq', 3, 'FAQ bot', 'Short answers to frequent questions, straight from your FAQ; never hands over by itself.',
 '{"persona": "You answer frequently asked questions. Reply in one or two sentences using only the knowledge provided, and point to the page the answer comes from. If the question is not covered, say that you do not know.",
   "greeting": "Hi! Ask me a question and I will find the answer in our FAQ.",
   "starters": ["What are your opening hours?", "How do I contact you?"],
   "texts": {"es": {"greeting": "¡Hola! Hazme una pregunta y buscaré la respuesta en nuestras preguntas frecuentes.", "starters": ["¿Cuál es vuestro horario?", "¿Cómo os contacto?"]},
             "fr": {"greeting": "Bonjour ! Posez une question, je cherche la réponse dans notre FAQ.", "starters": ["Quels sont vos horaires ?", "Comment vous contacter ?"]},
             "de": {"greeting": "Hallo! Stellen Sie eine Frage, ich suche die Antwort in unseren FAQ.", "starters": ["Wann haben Sie geöffnet?", "Wie erreiche ich Sie?"]},
             "tr": {"greeting": "Merhaba! Bir soru sorun, cevabı SSS sayfamızda bulayım.", "starters": ["Çalışma saatleriniz nedir?", "Size nasıl ulaşırım?"]}},
   "handoff": {"miss_threshold": 0},
   "lead_capture": {"mode": "never"}}'),
('booking', 4, 'Bookings', 'Helps visitors book, change or cancel appointments and takes their details for the team.',
 '{"persona": "You help visitors with appointments: opening times, how to book, change or cancel, and what to bring, using only the knowledge provided. You cannot see the calendar: to book, collect the visitor''s name, contact details and preferred time and tell them the team will confirm.",
   "greeting": "Hi! Would you like to book an appointment?",
   "starters": ["Book an appointment", "Change or cancel a booking", "What are your opening hours?"],
   "texts": {"es": {"greeting": "¡Hola! ¿Quieres reservar una cita?", "starters": ["Reservar una cita", "Cambiar o cancelar una reserva", "¿Cuál es vuestro horario?"]},
             "fr": {"greeting": "Bonjour ! Souhaitez-vous prendre rendez-vous ?", "starters": ["Prendre rendez-vous", "Modifier ou annuler un rendez-vous", "Quels sont vos horaires ?"]},
             "de": {"greeting": "Hallo! Möchten Sie einen Termin buchen?", "starters": ["Einen Termin buchen", "Termin ändern oder absagen", "Wann haben Sie geöffnet?"]},
             "tr": {"greeting": "Merhaba! Randevu almak ister misiniz?", "starters": ["Randevu al", "Randevuyu değiştir veya iptal et", "Çalışma saatleriniz nedir?"]}},
   "handoff": {"miss_threshold": 2},
   "lead_capture": {"mode": "after_messages", "after": 1, "fields": ["name", "email", "phone"]}}'),
('product_guide', 5, 'Product guide', 'Walks users through features and how-tos from your documentation.',
 '{"persona": "You are a product guide. Explain features and walk users through tasks step by step, using only the documentation provided, with short numbered steps and a link to the page. If the documentation does not cover it, say so and offer a person from the team.",
   "greeting": "Hi! What would you like to do? I can walk you through it.",
   "starters": ["How do I get started?", "What can I do with it?", "Show me the settings"],
   "texts": {"es": {"greeting": "¡Hola! ¿Qué quieres hacer? Te guío paso a paso.", "starters": ["¿Cómo empiezo?", "¿Qué puedo hacer con él?", "Muéstrame los ajustes"]},
             "fr": {"greeting": "Bonjour ! Que voulez-vous faire ? Je vous guide pas à pas.", "starters": ["Comment commencer ?", "Que puis-je faire avec ?", "Montrez-moi les réglages"]},
             "de": {"greeting": "Hallo! Was möchten Sie tun? Ich führe Sie Schritt für Schritt.", "starters": ["Wie fange ich an?", "Was kann ich damit machen?", "Zeig mir die Einstellungen"]},
             "tr": {"greeting": "Merhaba! Ne yapmak istiyorsunuz? Adım adım anlatayım.", "starters": ["Nasıl başlarım?", "Neler yapabilirim?", "Ayarları göster"]}},
   "handoff": {"miss_threshold": 3},
   "lead_capture": {"mode": "never"}}');
