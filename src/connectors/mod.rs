//! Built-in tools run server-side (`web_search`, `code_interpreter`, `image_generation`,
//! `document_library`) behind one trait. Agents already accept and store every tool type;
//! executing them is the connectors issue's work.
