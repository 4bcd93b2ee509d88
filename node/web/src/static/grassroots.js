// Shared by every page of both nodes: this session's CSRF token (node/web/src/csrf.rs), read
// from the grassroots_csrf cookie, added to every form that posts and offered to the pages'
// scripts as grassroots.csrfHeaders().
(function () {
  "use strict";
  function token() {
    const match = document.cookie.match(/(?:^|;\s*)grassroots_csrf=([0-9a-f]+)/);
    return match ? match[1] : "";
  }
  // The page's language (the server chose it: the account's, else the browser's), for the few
  // words this script says itself.
  const ZH = {
    "Your session has ended: sign in again.": "会话已结束：请重新登录。",
    "Sign in": "登录",
    "The node did not answer: check the network and try again.": "节点没有响应：请检查网络后重试。",
    "Not allowed: ": "无权操作：",
    "Pause updates": "暂停更新",
    "Resume updates": "恢复更新",
    // The consult viewer (hub/assets/web/consult.js).
    " annotations": " 个标注",
    "Connected to {}: tiles stream from its slide on demand.": "已连接 {}：切片图块按需传输。",
    "The link to {} is down. Tiles already here still show; the rest load when it is back.":
      "与 {} 的连接已中断。已载入的图块仍可查看，其余图块在连接恢复后载入。",
    "The hub cannot be reached. Retrying…": "无法连接中心节点，正在重试…",
    "Sent: signed with digest ": "已发送，签名摘要 ",
    // The referral form and the slide viewer of the edge (edge/assets/web/refer.js, viewer.js).
    "Not referred: ": "未转诊：",
    "The slide could not be opened: ": "无法打开切片：",
    "the edge did not answer": "边缘节点没有响应",
    "Some tiles could not be loaded; retrying as you move.": "部分图块未能载入；移动视图时会重试。",
    "Expert: ": "专家：",
    "Following the expert live.": "正在实时跟随专家。",
    "Live session interrupted; reconnecting…": "实时会话中断，正在重新连接…",
    "The chart could not be loaded: ": "图表未能载入：",
    // The radiology stack viewer (edge/assets/web/stack.js).
    "The image could not be shown: ": "无法显示图像：",
    "The view could not be shown: ": "无法显示该视图：",
    "Image": "图像",
    "window": "窗宽窗位",
    "This image does not say its pixel spacing: no length in mm.": "此图像未标明像素间距，无法以毫米计长度。",
    "Length": "长度",
    "Region": "区域",
    "min": "最小",
    "max": "最大",
    "Not sent: ": "未发送：",
    // The hub's view of a referred series (node/web/src/viewer/images.js).
    "Measuring…": "正在测量…",
    "This image does not say its size: it cannot be measured.": "此图像未标明尺寸，无法测量。",
    // The coverage and rounds charts (hub/assets/web/coverage.js, rounds.js).
    "Time": "时间",
    "Slides screened per 10,000 people": "每万人筛查切片数",
    "Slides screened": "已筛查切片",
    "per 10,000": "每万人",
    "screened": "已筛查",
    "slides": "切片",
    "Quality-control failures and referrals (% of screened)": "质控不合格与转诊（占已筛查的百分比）",
    "QC failure": "质控不合格",
    "referred": "已转诊",
    "Median referral turnaround (hours, bucket bound)": "转诊周转时间中位数（小时，分桶上界）",
    "median": "中位数",
    "hours": "小时",
    "Includes invented demo figures.": "包含虚构的演示数据。",
    "round": "轮次",
    "% of validation tiles": "验证图块百分比",
    "after the round": "本轮之后",
    "its base": "基础版本",
  };
  function say(english) {
    return document.documentElement.lang === "zh-CN" && ZH[english] ? ZH[english] : english;
  }

  // The server's reason for a failed request, in words, whatever the body: the API's
  // {"error": ...}, a plain-text refusal, or the status alone.
  function reason(response, text) {
    let said = "";
    try {
      const json = JSON.parse(text);
      said = (json && (json.error || json.message)) || "";
    } catch (notJson) {
      said = text.trim().slice(0, 300);
    }
    if (response.status === 401) return say("Your session has ended: sign in again.");
    if (!said) said = response.status + " " + (response.statusText || "error");
    if (response.status === 403 && !/^forbidden/i.test(said)) said = say("Not allowed: ") + said;
    return said;
  }

  // Shows `problem` (an Error from send(), or words) next to `control`, replacing the last
  // one shown there; nothing clears it. A session that ended gets a link to sign in again and
  // come back here.
  let unnamed = 0;
  function showError(control, problem) {
    if (!control) return;
    const message = problem && problem.message !== undefined ? problem.message : problem;
    if (!control.id) control.id = "control-" + (++unnamed);
    const id = control.id + "-error";
    let slot = document.getElementById(id);
    if (!message) {
      if (slot) slot.remove();
      control.removeAttribute("aria-describedby");
      return;
    }
    if (!slot) {
      slot = document.createElement("p");
      slot.id = id;
      slot.className = "error";
      slot.setAttribute("role", "alert");
      control.insertAdjacentElement("afterend", slot);
    }
    slot.textContent = message + " ";
    if (problem && problem.status === 401) {
      const link = document.createElement("a");
      link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      link.textContent = say("Sign in");
      slot.appendChild(link);
    }
    control.setAttribute("aria-describedby", id);
  }

  // fetch() with the session's CSRF token; resolves with the parsed JSON (or text) of a
  // success, rejects with an Error whose message is the server's reason (or that the node did
  // not answer).
  function send(url, options) {
    const opts = Object.assign({ method: "GET", credentials: "same-origin" }, options || {});
    const json = opts.json !== undefined;
    opts.headers = Object.assign({}, csrfHeaders(json), opts.headers || {});
    if (json) { opts.body = JSON.stringify(opts.json); delete opts.json; }
    return fetch(url, opts).then(function (response) {
      return response.text().then(function (text) {
        if (!response.ok) {
          const error = new Error(reason(response, text));
          error.status = response.status;
          throw error;
        }
        try { return JSON.parse(text); } catch (notJson) { return text; }
      });
    }, function () {
      throw new Error(say("The node did not answer: check the network and try again."));
    });
  }

  function csrfHeaders(json) {
    const headers = { "x-csrf-token": token() };
    if (json) headers["content-type"] = "application/json";
    return headers;
  }

  window.grassroots = {
    csrfToken: token,
    // Headers for fetch(): the token, and the content type when a JSON body goes with it.
    csrfHeaders: csrfHeaders,
    send: send,
    showError: showError,
    say: say,
  };

  // Every table reads as stacked cards on a phone (CSS below 600 px): each cell is labelled
  // with its column's heading. Long names are shortened; a tap shows them whole.
  function layOut() {
    document.documentElement.classList.add("js");
    const toggle = document.querySelector(".site-nav .menu-toggle");
    const list = document.getElementById("site-nav-list");
    if (toggle && list) {
      toggle.hidden = false;
      toggle.addEventListener("click", function () {
        const open = list.classList.toggle("open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
    document.querySelectorAll(".table-wrap table").forEach(function (table) {
      const headings = Array.from(table.querySelectorAll("thead th")).map(function (th) {
        return th.textContent.trim();
      });
      if (!headings.length) return;
      table.classList.add("cards");
      table.querySelectorAll("tbody tr").forEach(function (row) {
        Array.from(row.children).forEach(function (cell, index) {
          if (!cell.hasAttribute("data-label") && headings[index] && !cell.hasAttribute("colspan")) {
            cell.setAttribute("data-label", headings[index]);
          }
        });
      });
    });
    // On a touch screen (no hover to read the tooltip), a shortened name shows whole on the
    // first tap; a linked one opens on the next.
    const touch = window.matchMedia && window.matchMedia("(hover: none)").matches;
    document.addEventListener("click", function (event) {
      const name = touch && event.target.closest && event.target.closest(".name");
      if (!name) return;
      const shortened = name.scrollWidth > name.clientWidth + 1;
      if (name.classList.contains("whole")) {
        if (!event.target.closest("a")) name.classList.remove("whole");
      } else if (shortened) {
        event.preventDefault();
        name.classList.add("whole");
      }
    });
  }
  // Pages that follow something in progress reload every few seconds, unless the user paused
  // them (remembered for the tab), the tab is hidden, or someone is typing in a form.
  function liveUpdates() {
    const note = document.querySelector("[data-refresh]");
    if (!note) return;
    const seconds = Math.max(2, parseInt(note.dataset.refresh, 10) || 10);
    const key = "grassroots-paused:" + location.pathname;
    const button = document.createElement("button");
    button.type = "button";
    function paused() { return sessionStorage.getItem(key) === "1"; }
    function label() {
      button.textContent = say(paused() ? "Resume updates" : "Pause updates");
      button.setAttribute("aria-pressed", paused() ? "true" : "false");
    }
    button.addEventListener("click", function () {
      sessionStorage.setItem(key, paused() ? "0" : "1");
      label();
    });
    label();
    note.appendChild(button);
    setInterval(function () {
      const typing = document.activeElement && document.activeElement.closest("form, input, textarea, select");
      // Nor while the phone's menu is open or a long name is shown whole: the reload would fold
      // them under the user's finger.
      const looking = document.querySelector(".site-nav ul.open, .name.whole");
      if (!paused() && !document.hidden && !typing && !looking) location.reload();
    }, seconds * 1000);
  }

  // Moments come from the server in UTC (<time datetime>); they are shown in the reader's time
  // zone, written the way the page's language writes dates (2026年12月1日 19:26; Dec 1, 2026,
  // 7:26 PM), with the UTC form kept as the tooltip.
  function localTimes(root) {
    let format;
    try {
      format = new Intl.DateTimeFormat(document.documentElement.lang || "en", { dateStyle: "medium", timeStyle: "short" });
    } catch (unsupported) { return; }
    (root || document).querySelectorAll("time[datetime]").forEach(function (element) {
      const at = new Date(element.getAttribute("datetime"));
      if (isNaN(at.getTime()) || element.dataset.local) return;
      element.title = element.textContent;
      element.textContent = format.format(at);
      element.dataset.local = "1";
    });
  }
  window.grassroots.localTimes = localTimes;

  function ready() { localTimes(); layOut(); liveUpdates(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
    let input = form.querySelector("input[name=csrf]");
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = "csrf";
      form.appendChild(input);
    }
    input.value = token();
  }, true);
})();
