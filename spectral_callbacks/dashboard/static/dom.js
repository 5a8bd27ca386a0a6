// Small helpers to build HTML and SVG elements without innerHTML (the data holds user strings).

const SVG_NS = "http://www.w3.org/2000/svg";

function applyAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendChildren(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("div", {class: "x", text: "y"}, child, ...). */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  applyAttrs(node, attrs);
  appendChildren(node, children);
  return node;
}

/** An SVG element, same signature as h(). */
export function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  applyAttrs(node, attrs);
  appendChildren(node, children);
  return node;
}

/** Removes every child of a node and returns it. */
export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

/** Replaces the options of a <select>; keeps `selected` if it is among the values. */
export function setOptions(select, options, selected) {
  clear(select);
  for (const option of options) {
    const { value, label } = typeof option === "object" ? option : { value: option, label: option };
    select.append(h("option", { value, text: label }));
  }
  const values = options.map((o) => String(typeof o === "object" ? o.value : o));
  if (selected !== undefined && values.includes(String(selected))) select.value = String(selected);
}
