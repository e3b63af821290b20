// Markdown-lite: **bold**, *italic* / _italic_, `code`, [links](url), bare http(s) URLs,
// "- " / "1. " lists and paragraphs. Built with DOM APIs only; unsafe links stay text.
import { h } from './dom.js';

const SAFE = /^(https?|mailto):$/;

/** The absolute URL if it is http(s) or mailto, else null (so `javascript:` etc. never become links). */
export const safeUrl = (u) => {
  try {
    const x = new URL(String(u));
    return SAFE.test(x.protocol) ? x.href : null;
  } catch {
    return null;
  }
};

export const link = (href, text) =>
  h('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' }, text);

// 1 bold | 2 link text, 3 link url | 4 char before, 5 delimiter, 6 italic | 7 bare url | 8 code
// (no lookbehind: Safari < 16.4 cannot parse it)
const INLINE =
  /\*\*(.+?)\*\*|\[([^\]\n]+)\]\(([^)\s]+)\)|(^|[^\w*])([*_])([^\s*_](?:.*?\S)?)\5(?![\w*])|(https?:\/\/[^\s<>"]*[^\s<>".,;:!?)'])|`([^`\n]+)`/g;

const inline = (el, s) => {
  let i = 0;
  for (const m of s.matchAll(INLINE)) {
    el.append(s.slice(i, m.index));
    i = m.index + m[0].length;
    let u;
    if (m[1]) inline(el.appendChild(h('strong')), m[1]);
    else if (m[2]) (u = safeUrl(m[3])) ? inline(el.appendChild(link(u)), m[2]) : el.append(m[0]);
    else if (m[6]) {
      el.append(m[4]);
      inline(el.appendChild(h('em')), m[6]);
    }
    else if (m[7]) (u = safeUrl(m[7])) ? el.append(link(u, m[7])) : el.append(m[0]);
    else el.append(h('code', { text: m[8] }));
  }
  el.append(s.slice(i));
};

/** Render text as a DocumentFragment of <p>, <ul>/<ol> and inline elements. */
export const md = (text) => {
  const frag = document.createDocumentFragment();
  let list = null, para = null;
  for (const line of String(text ?? '').split(/\r?\n/)) {
    const li = /^\s*(?:([-*+\u2022])|\d{1,3}[.)])\s+(.*)/.exec(line);
    if (li) {
      const tag = li[1] ? 'UL' : 'OL';
      if (list?.tagName !== tag) frag.append((list = h(tag)));
      para = null;
      inline(list.appendChild(h('li')), li[2]);
    } else if (!line.trim()) {
      list = para = null;
    } else {
      list = null;
      if (para) para.append(h('br'));
      else frag.append((para = h('p')));
      inline(para, line);
    }
  }
  return frag;
};
