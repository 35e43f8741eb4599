// What the dashboard's panels build their nodes with, and how each says how an action went.

import { ApiError } from "./api.js";

/** An element with its class, text, attributes and children. */
export function node(tag, { className, text, attrs } = {}, children = []) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  for (const [key, value] of Object.entries(attrs ?? {})) element.setAttribute(key, value);
  element.append(...children);
  return element;
}

/** A message line (`node`): `text` as `kind` ("ok", "error"); no text hides it. */
export function showMessage(node, text, kind) {
  node.textContent = text;
  node.className = `message ${kind}`;
  node.hidden = !text;
}

/** A refusal's message, then its cause when it has one ("Task '7' is in status
 * SUCCESS"), as the sidetask command prints them; any other error's text. */
export function errorText(error) {
  if (!(error instanceof ApiError)) return String(error);
  return error.cause ? `${error.message} (${error.cause})` : error.message;
}
